"""The tiny data set of the bagging tests, for bags trained here."""

from tests.training.conftest import shapes_folder  # noqa: F401
