"""Wire schemas only (pydantic), shared by the API and the SDK."""
