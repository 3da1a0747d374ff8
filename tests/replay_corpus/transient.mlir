// Attention-like: scores and probabilities are transient tensors (queue_alloca/dealloca).
func.func @transient(%q: tensor<32x16xf32>, %k: tensor<32x16xf32>, %v: tensor<32x16xf32>) -> tensor<32x16xf32> {
  %c0 = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<32x32xf32>
  %z = linalg.fill ins(%c0 : f32) outs(%e : tensor<32x32xf32>) -> tensor<32x32xf32>
  %s = linalg.matmul indexing_maps = [affine_map<(i, j, d) -> (i, d)>, affine_map<(i, j, d) -> (j, d)>, affine_map<(i, j, d) -> (i, j)>] ins(%q, %k : tensor<32x16xf32>, tensor<32x16xf32>) outs(%z : tensor<32x32xf32>) -> tensor<32x32xf32>
  %ex = linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>], iterator_types = ["parallel", "parallel"]} ins(%s : tensor<32x32xf32>) outs(%e : tensor<32x32xf32>) {
  ^bb0(%a: f32, %b: f32):
    %m = arith.maximumf %a, %c0 : f32
    %t = arith.mulf %m, %m : f32
    linalg.yield %t : f32
  } -> tensor<32x32xf32>
  %e2 = tensor.empty() : tensor<32x16xf32>
  %z2 = linalg.fill ins(%c0 : f32) outs(%e2 : tensor<32x16xf32>) -> tensor<32x16xf32>
  %o = linalg.matmul ins(%ex, %v : tensor<32x32xf32>, tensor<32x16xf32>) outs(%z2 : tensor<32x16xf32>) -> tensor<32x16xf32>
  %e3 = tensor.empty() : tensor<32x16xf32>
  %z3 = linalg.fill ins(%c0 : f32) outs(%e3 : tensor<32x16xf32>) -> tensor<32x16xf32>
  %t2 = linalg.matmul ins(%ex, %o : tensor<32x32xf32>, tensor<32x16xf32>) outs(%z3 : tensor<32x16xf32>) -> tensor<32x16xf32>
  return %t2 : tensor<32x16xf32>
}
