//! ConfigMap and Secret references resolved to the drop-in tree. STUB: implemented in the spec work.
