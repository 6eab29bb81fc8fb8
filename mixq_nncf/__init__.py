"""mixq-nncf: sensitivity-aware mixed-precision quantization of SR GAN generators on NNCF and OpenVINO."""

__version__ = "0.1.0"
