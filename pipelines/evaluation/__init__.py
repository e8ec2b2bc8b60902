"""Site validation: a model measured on a lab's own labelled cases (``oncoagent evaluate``)."""
