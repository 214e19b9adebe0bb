//! Synthetic labelled log generator (`tokenwatch gen`).
