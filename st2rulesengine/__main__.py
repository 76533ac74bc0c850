"""python -m st2rulesengine"""

from st2rulesengine.cmd import main

if __name__ == "__main__":
    raise SystemExit(main())
