"""Build-time pages of the documentation site (an mkdocs hook module).

* ``<!-- cli-reference -->`` in a page is replaced by the help of every ``differland`` command,
  generated from the command definitions themselves; ``<!-- operator-table -->`` by the table
  of observation operators.
* Every notebook ``notebooks/NN_*.py`` (jupytext percent format) is executed in its smoke mode
  (``DIFFERLAND_SMOKE=1``) in a temporary folder and added to the site as
  ``notebooks/NN_*.md`` with its outputs and figures.

Set ``DIFFERLAND_SHARED`` when the shared data are not at ``../shared`` beside the repository.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

REPOSITORY = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPOSITORY / "notebooks"


# --- generated references --------------------------------------------------------------

def _commands(command: click.Command, path: tuple[str, ...]):
    """Every command below ``command``, depth first, in the order of the help listing."""
    yield path, command
    if isinstance(command, click.Group):
        context = click.Context(command, info_name=path[-1])
        for name in command.list_commands(context):
            yield from _commands(command.get_command(context, name), (*path, name))


def cli_reference() -> str:
    """The help text of every ``differland`` command, one section each."""
    import typer

    from differland.cli import app

    root = typer.main.get_command(app)
    sections = []
    for path, command in _commands(root, ("differland",)):
        context = click.Context(command, info_name=" ".join(path), terminal_width=100,
                                max_content_width=100)
        heading = "#" * min(len(path) + 1, 4)
        help_text = command.get_help(context)
        sections.append(f"{heading} `{' '.join(path)}`\n\n```text\n{help_text}\n```\n")
    return "\n".join(sections)


def operator_table() -> str:
    """The observation operators of ``differland.observations.OPERATORS`` as a Markdown table."""
    from differland.observations import OPERATORS

    rows = ["| stream | units | time aggregation | what is predicted |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {operator.units} | {operator.aggregation} | {operator.description} |"
             for name, operator in OPERATORS.items()]
    return "\n".join(rows)


GENERATED = {"<!-- cli-reference -->": cli_reference, "<!-- operator-table -->": operator_table}


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, generate in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown


# --- the executed notebooks ------------------------------------------------------------------

def execute_notebook(source: Path, workdir: Path):
    """The notebook of ``source`` executed top to bottom in smoke mode, ``workdir`` its cwd."""
    import jupytext
    import nbclient
    from jupyter_client.manager import KernelManager

    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    kernel = KernelManager(kernel_name="python3", transport="ipc",
                           ip=str(Path(workdir) / "kernel"))
    client = nbclient.NotebookClient(notebook, km=kernel, timeout=900,
                                     resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute(env=_notebook_environment())
    finally:  # a kernel manager passed in is not shut down by the client
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
    return notebook


def _notebook_environment() -> dict[str, str]:
    """Smoke mode, the shared data, and the kernel's own (inline) figure backend."""
    environment = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    return {**environment, "DIFFERLAND_SMOKE": "1",
            "DIFFERLAND_SHARED": os.environ.get("DIFFERLAND_SHARED",
                                                str(REPOSITORY.parent / "shared"))}


EXECUTED = ("!!! note \"Executed in smoke mode\"\n    This page is `notebooks/{stem}.py` run with"
            " `DIFFERLAND_SMOKE=1`: short records and few iterations, so its numbers are rough."
            " Run it without the variable for the full analysis.\n\n")
NOT_EXECUTED = ("!!! note \"Not executed in this build\"\n    This page shows the code of"
                " `notebooks/{stem}.py` without its outputs.\n\n")


def notebook_markdown(notebook, stem: str, banner: str) -> tuple[str, dict[str, bytes]]:
    """Markdown of a notebook, and its figures keyed by their file names."""
    from nbconvert import MarkdownExporter

    body, resources = MarkdownExporter().from_notebook_node(
        notebook, resources={"output_files_dir": f"{stem}_files"})
    return banner.format(stem=stem) + body, resources.get("outputs", {})


@event_priority(100)
def on_files(files, config):
    import jupytext

    execute = os.environ.get("DIFFERLAND_DOCS_NOTEBOOKS", "execute") != "skip"
    for source in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        if execute:
            with tempfile.TemporaryDirectory() as workdir:
                notebook = execute_notebook(source, Path(workdir))
        else:
            notebook = jupytext.read(source)
        body, figures = notebook_markdown(notebook, source.stem,
                                          EXECUTED if execute else NOT_EXECUTED)
        files.append(File.generated(config, f"notebooks/{source.stem}.md", content=body))
        for name, content in figures.items():
            files.append(File.generated(config, f"notebooks/{name}", content=content))
    return files
