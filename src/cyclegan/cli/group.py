"""The ``cyclegan`` command group and how every command reports failure.

User errors (``CycleGANError``) print as one line on stderr and exit with status 1; flag errors
(unknown option, bad choice, missing argument) print as one line and exit with status 2, as click's
own usage errors do; Ctrl-C exits 130 and SIGTERM 143 (128 + the signal number).
"""

from __future__ import annotations

import signal

import click

from cyclegan.cli.flags import as_flags
from cyclegan.errors import CycleGANError, followups


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# A group called without a command: click shows its help (older click does so without raising).
_SHOW_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _usage_error(ctx: click.Context, e: click.UsageError) -> None:
    if isinstance(e, _SHOW_HELP):
        raise e
    # click prints the usage block, a hint and the error on four lines; keep the error and the hint
    # on one, like every other error of this command.
    where = e.ctx.command_path if e.ctx is not None else ctx.command_path
    click.echo(f"error: {_one_line(e.format_message())} (see '{where} --help')", err=True)
    ctx.exit(e.exit_code)


class _Group(click.Group):
    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            _usage_error(ctx, e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            _usage_error(ctx, e)
        except CycleGANError as e:
            # One line, always: messages may embed library text with newlines (torch.load's is 8 lines).
            # The library names its parameters (batch_size); the user typed flags (--batch-size).
            click.echo(f"error: {as_flags(_one_line(str(e)))}", err=True)
            _echo_followups(e)
            ctx.exit(1)
        except KeyboardInterrupt as e:
            click.echo("interrupted", err=True)
            _echo_followups(e)
            ctx.exit(128 + getattr(e, "signum", signal.SIGINT))  # 130 for Ctrl-C, 143 for a second SIGTERM


def _echo_followups(error: BaseException) -> None:
    """Problems met while cleaning up after ``error`` (a stop record on a full disk): after it, one line
    each."""
    for line in followups(error):
        click.echo(f"warning: {_one_line(line)}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cyclegan")
def main() -> None:
    """Unpaired image-to-image translation (CycleGAN family): photos <-> Ghibli/anime/cartoon."""
