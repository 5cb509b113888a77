"""Triton entry point of `tokenizer`; the model is `aisle_server.triton_models.TokenizerModel`."""
import os
import site

if os.environ.get("AISLE_SITE_PACKAGES"):  # set by `aisle serve`: the stub runs isolated, ignoring PYTHONPATH
    site.addsitedir(os.environ["AISLE_SITE_PACKAGES"])

from aisle_server.triton_models import TokenizerModel as TritonPythonModel  # noqa: E402, F401 - after site.addsitedir above; the name Triton looks up
