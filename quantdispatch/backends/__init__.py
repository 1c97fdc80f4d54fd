"""The shell side of the backends: the loaders that ``Backend.loader`` names, imported only when
a plan is executed. Each module imports torch (and its kernels) at its top; the pure core never
imports this package."""
