"""metric-retrieval: deep metric learning and image retrieval (CGD, CLF, ABIR, regional attention, DAS) on shared
parts."""
__version__ = "0.1.0"
