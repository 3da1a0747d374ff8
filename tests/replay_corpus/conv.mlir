// A small convolution network: conv 3x3 -> relu -> conv 3x3.
func.func @conv(%x: tensor<1x10x10x3xf32>, %f1: tensor<3x3x3x8xf32>, %f2: tensor<3x3x8x4xf32>) -> tensor<1x6x6x4xf32> {
  %c0 = arith.constant 0.0 : f32
  %e1 = tensor.empty() : tensor<1x8x8x8xf32>
  %z1 = linalg.fill ins(%c0 : f32) outs(%e1 : tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32>
  %c1 = linalg.conv_2d_nhwc_hwcf {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>} ins(%x, %f1 : tensor<1x10x10x3xf32>, tensor<3x3x3x8xf32>) outs(%z1 : tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32>
  %r1 = linalg.generic {indexing_maps = [affine_map<(n, h, w, c) -> (n, h, w, c)>, affine_map<(n, h, w, c) -> (n, h, w, c)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%c1 : tensor<1x8x8x8xf32>) outs(%e1 : tensor<1x8x8x8xf32>) {
  ^bb0(%a: f32, %b: f32):
    %m = arith.maximumf %a, %c0 : f32
    linalg.yield %m : f32
  } -> tensor<1x8x8x8xf32>
  %e2 = tensor.empty() : tensor<1x6x6x4xf32>
  %z2 = linalg.fill ins(%c0 : f32) outs(%e2 : tensor<1x6x6x4xf32>) -> tensor<1x6x6x4xf32>
  %c2 = linalg.conv_2d_nhwc_hwcf {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>} ins(%r1, %f2 : tensor<1x8x8x8xf32>, tensor<3x3x8x4xf32>) outs(%z2 : tensor<1x6x6x4xf32>) -> tensor<1x6x6x4xf32>
  return %c2 : tensor<1x6x6x4xf32>
}
