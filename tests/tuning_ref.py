"""Reference computations (pyarrow.compute) for the filter/sweep/sheet tests.

Comparison rule, the same as filter_expr.h: numbers compare in double precision with a
float32 value widened exactly to double (pyarrow.compute does this when both sides are
cast to float64 first; numpy/pandas would instead round the literal to float32 when
comparing a float32 array with a Python float, which is NOT our rule). A null operand
never passes; NaN fails every comparison.
"""
import pyarrow as pa
import pyarrow.compute as pc

OPS = {"<": pc.less, "<=": pc.less_equal, ">": pc.greater, ">=": pc.greater_equal,
       "==": pc.equal, "!=": pc.not_equal}


def num(t, col):
    c = t[col]
    if pa.types.is_floating(c.type) or pa.types.is_integer(c.type):
        return c.cast(pa.float64())
    return c


def clause(t, operand, op, value):
    """Boolean array (nulls where the operand is null) for `operand op value`;
    operand is a column name, ('min', A, B), ('max', A, B) or ('len', A)."""
    if isinstance(operand, tuple):
        kind = operand[0]
        if kind == "len":
            x = pc.utf8_length(t[operand[1]]).cast(pa.float64())
        else:
            a, b = num(t, operand[1]), num(t, operand[2])
            f = pc.min_element_wise if kind == "min" else pc.max_element_wise
            x = f(a, b, skip_nulls=False)
    else:
        x = num(t, operand)
    if op == "in":
        return pc.if_else(pc.is_null(x), pa.scalar(None, pa.bool_()),
                          pc.is_in(x, value_set=pa.array(value)))
    return OPS[op](x, value)


def passes(arr):
    """True where the clause passes (null -> False)."""
    return pc.fill_null(arr, False)


def success(t):
    return pc.equal(t["status"], "success")
