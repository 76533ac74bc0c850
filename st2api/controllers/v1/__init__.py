"""The v1 resource controllers, in the order the router consults them."""

from st2api.controllers.v1.actions import ActionsController
from st2api.controllers.v1.executions import ExecutionsController
from st2api.controllers.v1.packs import PacksController
from st2api.controllers.v1.runnertypes import RunnerTypesController

CONTROLLERS = (ActionsController, ExecutionsController, PacksController, RunnerTypesController)

__all__ = ["CONTROLLERS", "ActionsController", "ExecutionsController", "PacksController", "RunnerTypesController"]
