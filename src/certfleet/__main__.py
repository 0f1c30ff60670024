from certfleet.cli import run

run()
