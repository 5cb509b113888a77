"""Triton entry point of `item_encoder`; the model is `aisle_server.triton_models.EncoderModel`."""
import os
import site

if os.environ.get("AISLE_SITE_PACKAGES"):  # set by `aisle serve`: the stub runs isolated, ignoring PYTHONPATH
    site.addsitedir(os.environ["AISLE_SITE_PACKAGES"])

from aisle_server.triton_models import EncoderModel as TritonPythonModel  # noqa: E402, F401 - after site.addsitedir above; the name Triton looks up
