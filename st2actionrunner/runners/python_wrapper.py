"""The worker side of the python-script runner: a warm interpreter that runs one pack's actions.

Started by st2actionrunner/runners/python.py as
``python -u python_wrapper.py --pack P --request-fd R --response-fd W``.
It imports st2common's Action once, then loops: read one JSON request line
from fd R, run the action, write the end marker to stdout and to stderr, and
one JSON response line to fd W. stdout and stderr stay the action's own (the
parent streams them as output lines); the markers tell the parent where one
run's output ends. EOF on fd R means the parent is gone or retires us: exit.

request:  {id, file_path, parameters, config, config_path, log_level, env, sys_path, marker}
response: {id, exit_code, status, result, error}
  exit_code 0 ran; 1 the action raised (traceback on stderr); 220 run() returned a
  tuple whose first item is not a bool (StackStorm's code); n the action called sys.exit(n).

Nothing here may import eventlet or the service packages: this is plain, blocking Python.
"""

if __name__ == "__main__":
    import sys

    # Running a file puts its folder first on sys.path, and this folder holds
    # http.py: drop it before anything imports the standard library's http.
    sys.path.pop(0)

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

from st2common.exceptions import RunnerError  # noqa: E402
from st2common.runners.base_action import Action, PackConfigDict, action_logger  # noqa: E402
from st2common.util.process import die_with_parent  # noqa: E402

INVALID_STATUS_EXIT_CODE = 220
INVALID_STATUS_MESSAGE = (
    "If this is an existing action which returns a tuple with two items, it needs to be updated to\n"
    "either:\n\n1. Return a list instead of a tuple\n"
    "2. Return a tuple where a first items is a status flag - (True, ('item1', 'item2'))\n\n"
    "For more information, please see: https://docs.stackstorm.com/upgrade_notes.html#st2-v1-6"
)

# file path -> ((mtime_ns, size), action class): a changed file is loaded again.
_CLASSES: dict = {}


def load_action_class(path: str) -> type:
    """The Action subclass of a pack file, as StackStorm picks it (first by name, defined there first)."""
    stat = os.stat(path)
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _CLASSES.get(path)
    if cached and cached[0] == version:
        return cached[1]
    base = os.path.splitext(os.path.basename(path))[0]
    # A private module name: an action file called json.py must not replace the real json.
    name = f"st2action_{base}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        raise RunnerError(
            f'Failed to load action class from file "{path}" (action file most likely doesn\'t exist or '
            f"contains invalid syntax): {exc}\n\n{traceback.format_exc()}"
        ) from exc
    classes = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
               if issubclass(cls, Action) and cls is not Action and not inspect.isabstract(cls)]
    own = [cls for cls in classes if cls.__module__ == name]
    if not classes:
        raise RunnerError(f'File "{path}" has no action class or the file doesn\'t exist.', path=path)
    action_class = (own or classes)[0]
    _CLASSES[path] = (version, action_class)
    return action_class


def encode_response(response: dict) -> bytes:
    """The response as one JSON line; a result JSON cannot hold is sent as its str(), as StackStorm does."""
    try:
        text = json.dumps(response)
    except (TypeError, ValueError):
        text = json.dumps(dict(response, result=str(response["result"])))
    return text.encode() + b"\n"


def run_request(pack: str, request: dict) -> dict:
    """Run one action request; returns the response (output went to stdout/stderr on the way)."""
    response = {"id": request.get("id"), "exit_code": 0, "status": None, "result": None, "error": None}
    for folder in reversed(request.get("sys_path") or []):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    saved_env = dict(os.environ)
    os.environ.update(request.get("env") or {})
    try:
        action_class = load_action_class(request["file_path"])
        config = PackConfigDict(pack, request.get("config") or {}, request.get("config_path"))
        try:
            action = action_class(config=config, action_service=None)
        except TypeError as exc:
            # Older pack actions override __init__(self, config) only; StackStorm accepts them.
            if "action_service" not in str(exc):
                raise
            action = action_class(config=config)
            action.action_service = None
        # Same logger object the instance holds: set the level this run asked for.
        action_logger(action_class.__name__, request.get("log_level") or "DEBUG")
        output = action.run(**(request.get("parameters") or {}))
        status = None
        if isinstance(output, tuple) and len(output) == 2:
            status, output = output
            if not isinstance(status, bool):
                message = ("Status returned from the action run() method must either be True or False, "
                           f"got: {status}\n{INVALID_STATUS_MESSAGE}")
                sys.stderr.write(message + "\n")
                response.update(exit_code=INVALID_STATUS_EXIT_CODE, error=message)
                return response
        response.update(status=status, result=output)
    except SystemExit as exc:
        code = exc.code
        response["exit_code"] = code if isinstance(code, int) else (0 if code is None else 1)
        if code is not None and not isinstance(code, int):
            sys.stderr.write(f"{code}\n")
    except BaseException:
        text = traceback.format_exc()
        sys.stderr.write(text)
        response.update(exit_code=1, error=text)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return response


def serve(pack: str, request_fd: int, response_fd: int) -> None:
    """Answer requests until the parent closes the request pipe."""
    requests = os.fdopen(request_fd, "rb")
    responses = os.fdopen(response_fd, "wb")
    for line in requests:
        request = json.loads(line)
        response = run_request(pack, request)
        marker = request["marker"].encode()
        for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
            os.write(fd, marker)
        responses.write(encode_response(response))
        responses.flush()


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description="python-script runner worker")
    parser.add_argument("--pack", required=True)
    parser.add_argument("--request-fd", type=int, required=True)
    parser.add_argument("--response-fd", type=int, required=True)
    args = parser.parse_args()
    # Die with the action runner that started us (set here, not in a preexec_fn, which
    # would cost the runner its fast spawn path); a runner already gone means we are orphaned.
    parent = os.getppid()
    die_with_parent()()
    if os.getppid() != parent:
        sys.exit(1)
    serve(args.pack, args.request_fd, args.response_fd)


if __name__ == "__main__":
    main()
