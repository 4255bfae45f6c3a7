import os
import sys

import pytest

# The samples: SLOPE_SOURCE_DIR from ctest, else this checkout.
SOURCE = os.environ.get("SLOPE_SOURCE_DIR",
                        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture
def samples():
    return os.path.join(SOURCE, "samples")
