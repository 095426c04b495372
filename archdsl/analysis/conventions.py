"""How the analysis counts: the conventions the summary prints under its table, and the bytes
per activation value of each dtype it can count in."""

CONVENTIONS = (
    "Params: weights + biases as PyTorch counts them; BN running stats are buffers (listed separately).",
    "MACs: conv k·k·Cin/groups·Cout·H·W and fc in·out; FLOPs = 2 × MACs. Other ops: each op's own count.",
    "Activations: input + every new tensor (ReLU/dropout in place, flatten a view), per sample.",
    "RF: receptive field size/jump in input pixels; a join sees the union of its inputs' fields; not clipped.",
)

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}
