def quantize_bert(model):
    raise NotImplementedError("int8 needs edgepack.kernels.linear_int8 (gemm branch)")
