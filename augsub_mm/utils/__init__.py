from .fashion_mnist import prepare_fashion_mnist

__all__ = ['prepare_fashion_mnist']
