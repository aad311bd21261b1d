.PHONY: quickstart test unit setup
quickstart:
	bash scripts/quickstart.sh
test:
	bash scripts/test.sh
unit:
	bash scripts/test.sh -m "not vm"
setup:
	bash scripts/setup.sh
