"""A Keras model's compiled loss, as the Hessian training steps take it."""


def model_loss(model, x, y, sample_weight, training):
    """The compiled loss of `model` on `(x, y)` and its predictions, as
    Keras's TensorFlow and torch training steps compute them."""
    kwargs = {"training": training} if model._call_has_training_arg else {}
    y_pred = model(x, **kwargs)
    loss = model._compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
    )
    return loss, y_pred
