// Stand-in for CUDA's <cuda_bf16.h> when probes/cuda/*.cu are compiled for the CPU: cuda_cpu.h
// (force-included) defines the types and intrinsics the kernels use.
#pragma once
