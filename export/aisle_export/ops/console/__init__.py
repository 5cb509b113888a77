"""``aisle console``: a small web page over a served Aisle — previews with their explanations, the
rules in force and a dry run of a proposed rule, a shopper's events, live catalog changes, experiment
reports.

One module per job: ``views`` (what the page shows, computed from the SDK's answers: pure),
``guard`` (the console's settings and who may change rules), ``store`` (reads of the state store),
``reports`` (experiment reports on disk), ``app`` (the FastAPI routes and the server that runs
them). The page itself is plain HTML, CSS and JavaScript in ``static/`` (package data: no build
step, nothing downloaded).
"""
