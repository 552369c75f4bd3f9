from studio.ui.panes.placeholder import NotBuiltPane


class PromptPane(NotBuiltPane):
    feature = "The Prompt pane (local LLMs)"
