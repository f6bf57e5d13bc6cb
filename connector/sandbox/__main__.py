"""`python -m connector.sandbox`: the sandbox as a subprocess, same options as `connector sandbox`."""

import typer

from connector.sandbox.cli import sandbox_command

typer.run(sandbox_command)
