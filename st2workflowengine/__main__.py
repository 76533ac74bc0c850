"""python -m st2workflowengine"""

from st2workflowengine.cmd import main

if __name__ == "__main__":
    raise SystemExit(main())
