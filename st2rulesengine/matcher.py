from st2common.matcher import *  # noqa: F401,F403 - moved to st2common so st2api can use it too
