"""The demos, one per example of the article; see osvirt.demo for their protocol."""
