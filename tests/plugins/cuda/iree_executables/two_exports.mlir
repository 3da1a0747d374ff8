// Two dispatches linked into one executable: a multiply and a sum reduction, so the
// container has two exports in entry-point order.
func.func @mul_sum(%a: tensor<256xf32>, %b: tensor<256xf32>) -> (tensor<256xf32>, tensor<f32>) {
  %m = arith.mulf %a, %b : tensor<256xf32>
  %z = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<f32>
  %f = linalg.fill ins(%z : f32) outs(%e : tensor<f32>) -> tensor<f32>
  %s = linalg.reduce ins(%a : tensor<256xf32>) outs(%f : tensor<f32>) dimensions = [0]
    (%x: f32, %acc: f32) {
      %y = arith.addf %x, %acc : f32
      linalg.yield %y : f32
    }
  return %m, %s : tensor<256xf32>, tensor<f32>
}
