"""`.arch` source the tests share."""

# ResNet's basic block (two 3x3 convs, a projection shortcut when the shape changes)
BASIC_BLOCK = """
block basic(c, stride = 1) {
    residual {
        conv1: conv(c, 3, stride=stride, pad=1, bias=false) -> bn1: bn -> relu
        conv2: conv(c, 3, pad=1, bias=false) -> bn2: bn
    } shortcut if stride != 1 or in.c != c {
        downsample: (conv(c, 1, stride=stride, bias=false) -> bn)
    }
    relu
}
"""
