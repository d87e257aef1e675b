"""Repro: Grappler drops the read-before-update order of a BN `gamma`.

Traces `fit`'s train step of `Dense -> keras.layers.BatchNormalization`
with a loss linear in the output, lets TensorFlow optimize it (dumped via
TF_DUMP_GRAPH_PREFIX), and reports, for each SGD `AssignSubVariableOp`,
whether the forward `ReadVariableOp` of the same variable is among its
ancestors (data or control). With Grappler's dependency optimizer on,
gamma's update has no path from gamma's forward read: the executor may
update gamma before the forward reads it. Run:

    KERAS_BACKEND=tensorflow python scripts/tf_grappler_read_order_repro.py
    KERAS_BACKEND=tensorflow python scripts/tf_grappler_read_order_repro.py \
        --no-dependency-optimization
"""

import os
import re
import sys
import tempfile

DUMP = tempfile.mkdtemp()
os.environ["TF_DUMP_GRAPH_PREFIX"] = DUMP
os.environ["TF_CPP_VMODULE"] = "meta_optimizer=1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if "--no-dependency-optimization" in sys.argv:
    tf.config.optimizer.set_experimental_options(
        {"dependency_optimization": False}
    )
inputs = keras.Input((4, 3))
outputs = keras.layers.BatchNormalization()(keras.layers.Dense(3)(inputs))
model = keras.Model(inputs, outputs)
model.compile(
    optimizer=keras.optimizers.SGD(0.5),
    loss=lambda t, p: keras.ops.sum(t * p, axis=(1, 2)),
)
x = np.random.rand(6, 4, 3).astype("float32")
model.train_on_batch(x, x)

(name,) = [n for n in os.listdir(DUMP) if n.startswith("after_MetaOpt")]
text = open(os.path.join(DUMP, name)).read().split("\nlibrary {")[0]
inputs_of, op_of = {}, {}
for node in re.findall(r"node \{\n(.*?)\n\}", text, re.S):
    node_name = re.search(r'name: "([^"]+)"', node).group(1)
    op_of[node_name] = re.search(r'op: "([^"]+)"', node).group(1)
    inputs_of[node_name] = [
        i.lstrip("^").split(":")[0]
        for i in re.findall(r'input: "([^"]+)"', node)
    ]


def ancestors(node):
    seen, stack = set(), [node]
    while stack:
        for parent in inputs_of.get(stack.pop(), []):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


for node, op in sorted(op_of.items()):
    if op == "AssignSubVariableOp":
        resource = inputs_of[node][0]
        reads = [
            n
            for n in op_of
            if op_of[n] == "ReadVariableOp" and inputs_of[n][0] == resource
        ]
        before = ancestors(node)
        print(node, resource, {r: r in before for r in reads})
