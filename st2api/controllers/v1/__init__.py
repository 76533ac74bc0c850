"""The v1 resource controllers, in the order the router consults them."""

from st2api.controllers.v1.actions import ActionsController
from st2api.controllers.v1.apikeys import ApiKeysController
from st2api.controllers.v1.config_schemas import ConfigSchemasController
from st2api.controllers.v1.configs import ConfigsController
from st2api.controllers.v1.executions import ExecutionsController
from st2api.controllers.v1.inquiries import InquiriesController
from st2api.controllers.v1.keys import KeysController
from st2api.controllers.v1.packs import PacksController
from st2api.controllers.v1.policies import PoliciesController
from st2api.controllers.v1.policytypes import PolicyTypesController
from st2api.controllers.v1.runnertypes import RunnerTypesController
from st2api.controllers.v1.sensortypes import SensorTypesController
from st2api.controllers.v1.ruleenforcements import RuleEnforcementsController
from st2api.controllers.v1.rules import RulesController
from st2api.controllers.v1.ruletypes import RuleTypesController
from st2api.controllers.v1.timers import TimersController
from st2api.controllers.v1.tokens import AuthController, TokensController
from st2api.controllers.v1.traces import TracesController
from st2api.controllers.v1.triggerinstances import TriggerInstancesController
from st2api.controllers.v1.triggers import TriggersController
from st2api.controllers.v1.triggertypes import TriggerTypesController
from st2api.controllers.v1.user import UserController
from st2api.controllers.v1.webhooks import WebhooksController
from st2api.controllers.v1.workflows import WorkflowsController

CONTROLLERS = (ActionsController, ExecutionsController, PacksController, RunnerTypesController,
               SensorTypesController)
CONTROLLERS += (RulesController, RuleTypesController, RuleEnforcementsController, TriggerTypesController,
                TriggersController, TriggerInstancesController, TracesController, WebhooksController,
                TimersController)
CONTROLLERS += (KeysController,)
CONTROLLERS += (ConfigsController, ConfigSchemasController)
CONTROLLERS += (PoliciesController, PolicyTypesController)

__all__ = ["CONTROLLERS", "ActionsController", "ExecutionsController", "PacksController", "RunnerTypesController",
           "SensorTypesController", "RulesController", "RuleTypesController", "RuleEnforcementsController",
           "TriggerTypesController", "TriggersController", "TriggerInstancesController", "TracesController",
           "WebhooksController", "TimersController"]
__all__ += ["KeysController"]
__all__ += ["ConfigsController", "ConfigSchemasController"]
CONTROLLERS += (WorkflowsController,)
__all__ += ["WorkflowsController"]
__all__ += ["PoliciesController", "PolicyTypesController"]
CONTROLLERS += (AuthController, ApiKeysController, UserController)
__all__ += ["AuthController", "ApiKeysController", "UserController"]
# The auth port's app serves only these.
AUTH_CONTROLLERS = (TokensController,)
CONTROLLERS += (InquiriesController,)
__all__ += ["InquiriesController"]
