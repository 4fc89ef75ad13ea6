from damp.cli.parser import build_parser
from damp.cli.reference import cli_reference
from tests.conftest import REPO


def test_docs_cli_md_is_the_parsers_own_help():
    page = (REPO / "docs" / "cli.md").read_text()
    assert page == cli_reference(), "docs/cli.md is stale: python -m damp.cli.reference > docs/cli.md"


def test_every_flag_of_every_command_is_on_the_page():
    page = cli_reference()
    for action in build_parser()._subparsers._group_actions[0].choices.values():
        for option in (o for a in action._actions for o in a.option_strings):
            assert option in page.split(f"## damp {action.prog.split()[-1]}")[1].split("\n## ")[0], option
