"""Video and image decode/encode with PyAV."""
