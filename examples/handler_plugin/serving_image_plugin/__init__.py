"""Images for sagemaker-onnx-serving: ``image/png`` and ``image/jpeg`` codecs and a handler
that fits decoded images to an ONNX model's image input."""
