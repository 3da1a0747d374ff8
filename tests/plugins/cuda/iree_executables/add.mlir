// Elementwise add of two static 64-element vectors: one export, three bindings (two
// read-only), no constants, no implicit arguments.
func.func @add(%a: tensor<64xf32>, %b: tensor<64xf32>) -> tensor<64xf32> {
  %0 = arith.addf %a, %b : tensor<64xf32>
  return %0 : tensor<64xf32>
}
