import warnings

# `import paddle` warns about a C++ extension cache that this project never compiles with.
warnings.filterwarnings("ignore", message="No ccache found")
