"""A small Shiny for Python app to run behind tideway (see examples/shiny/README.md).

Each page names the replica that served it, greets whatever is typed into it over the session's WebSocket,
and offers a download: all three come from the replica that holds the session, since Shiny keeps a
session's state in the memory of the process that runs it.
"""

import os

from shiny import App, render, ui

REPLICA = os.environ.get("TIDEWAY_REPLICA", "standalone")


def app_ui(request):
    return ui.page_fluid(
        ui.h2("Hello from Shiny"),
        ui.p("This page was served by ", ui.span(REPLICA, id="page_replica"), "."),
        ui.input_text("name", "Your name", ""),
        ui.output_text("greeting"),
        ui.download_link("report", "Download a report"),
    )


def server(input, output, session):
    @render.text
    def greeting():
        return f"Hello, {input.name() or 'stranger'}, from {REPLICA}"

    @render.download(filename="report.txt")
    def report():
        yield f"{input.name() or 'stranger'} on {REPLICA}\n"


app = App(app_ui, server)
