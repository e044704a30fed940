"""ControlNet units in a render: files, preprocessors, the residuals in the UNet call."""
