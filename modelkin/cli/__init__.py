"""The command line: typer commands that parse, call the Registry, and print. No logic lives here."""
