import os
import warnings

# OpenBLAS worker threads spin for a long time after each matrix product (the kNN search) and
# steal the cores from Paddle's next forward pass: on the 2-core test machine infer.py measured
# 92 ms/image with the default and 50 ms with a short spin. Must be set before NumPy loads.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


# `import paddle` warns about a C++ extension cache that this project never compiles with.
warnings.filterwarnings("ignore", message="No ccache found")
