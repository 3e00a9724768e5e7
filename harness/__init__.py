"""vtimer-harness: conformance harness for KVM/arm64's user-space irqchip timer path."""
