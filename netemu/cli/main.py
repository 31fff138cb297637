import sys

from netemu import __version__


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--version", "version"):
        print(f"netemu {__version__}")
        return 0
    print("netemu: not yet", file=sys.stderr)
    return 1
