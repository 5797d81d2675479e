"""int8 quantisation: the NumPy reference (numerics), the TFLite converter
wrapper (convert), the .tflite prefix slicer (slicer) and TFLite Micro in a
subprocess (tflm)."""
