from .classifiers import *  # noqa: F401,F403
from .families import FAMILIES, get_family  # noqa: F401
from .losses import *  # noqa: F401,F403
from .submodels import *  # noqa: F401,F403
from .wrappers import *  # noqa: F401,F403
