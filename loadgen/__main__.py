import sys

try:
    from loadgen.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C while starting up, before a command installed its handling
    print("loadgen: interrupted", file=sys.stderr)
    code = 130
raise SystemExit(code)
