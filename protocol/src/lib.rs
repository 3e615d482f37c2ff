//! Kafka wire layer (being written).
