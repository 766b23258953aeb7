"""Drawing: every figure and annotated image the project makes."""
