"""python -m st2api"""

from st2api.cmd import main

if __name__ == "__main__":
    raise SystemExit(main())
