"""Triton entry point of `rules`; the model is `aisle_server.triton_models.RulesModel`."""
import os
import site

# Set by `aisle serve` (aisle_server.tritonserver): the stub runs isolated, ignoring PYTHONPATH. One or
# more directories, in order: where the launcher's own aisle packages live, then its site-packages.
for _directory in os.environ.get("AISLE_SITE_PACKAGES", "").split(os.pathsep):
    if _directory:
        site.addsitedir(_directory)

from aisle_server.triton_models import RulesModel as TritonPythonModel  # noqa: E402, F401 - after site.addsitedir above; the name Triton looks up
