"""python -m st2sensorcontainer"""

from st2sensorcontainer.cmd import main

if __name__ == "__main__":
    raise SystemExit(main())
