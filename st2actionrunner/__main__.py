"""python -m st2actionrunner"""

from st2actionrunner.cmd import main

if __name__ == "__main__":
    raise SystemExit(main())
